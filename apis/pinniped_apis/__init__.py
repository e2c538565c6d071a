"""The API both sides speak: wire types shared by the `pinniped` CLI and the concierge.

Neither `pinniped_cli` nor `pinniped_concierge` imports the other; both import
this package, so a field renamed here breaks both at once, in tests.
"""
