"""Fixtures for the whole suite; each local part has its own plugin module in hack/localenv."""

pytest_plugins = [
    "localenv.leak_sentinel",  # first: it watches every subprocess the others start
    "localenv.fixtures_cluster",
    "localenv.fixtures_idp",
    "localenv.fixtures_concierge",
    "localenv.fixtures_cli",
    "localenv.fixtures_secret_service",
]
