"""The cluster as the node sees it: the api-server, the runtime mappings."""
