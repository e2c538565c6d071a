"""Fixtures for the whole suite: each local part lives in its own plugin module under hack/localenv."""

pytest_plugins = [
    "localenv.fixtures_cluster",
    "localenv.fixtures_idp",
    "localenv.fixtures_concierge",
    "localenv.fixtures_cli",
]
