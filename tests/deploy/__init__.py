"""Checks of the deploy artifacts (deploy/): the image, the compose stack, the Kubernetes manifests, the lock file."""
