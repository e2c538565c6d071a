"""OpenID Connect for the CLI: discovery, the three login flows, refresh and ID token checks.

Everything here imports httpx or joserfc, so nothing here is imported on the
cached path; `pinniped_cli.cmd_login_oidc` reaches it only when it must talk to the IdP.
"""
