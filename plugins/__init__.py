"""Built-in llmhd plugins, registered through the same hooks a third-party plugin uses.

Installed as the package ``llmhd_plugins``.
"""
