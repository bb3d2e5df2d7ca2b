"""The `liqi` command line: `liqi <noun> <verb>`, one module per noun."""
