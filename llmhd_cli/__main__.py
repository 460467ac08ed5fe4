from llmhd_cli.cli import main

main()
