"""The listener's HTTP port: metrics, health and readiness."""
