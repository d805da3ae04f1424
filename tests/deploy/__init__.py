"""Tests of deploy/ (Prometheus, Grafana, compose, Kubernetes), the Dockerfile and configs/docker.yaml."""
