"""Local development environment: etcd, kube-apiserver, a test IdP and the concierge on loopback."""
