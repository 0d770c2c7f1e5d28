"""The jobcluster command-line client (gRPC only)."""
