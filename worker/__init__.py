"""The jobcluster worker program."""
