"""The command line: each command's parser, handler and output; the top layer."""
