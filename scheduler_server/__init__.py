"""The jobcluster gRPC server program."""
