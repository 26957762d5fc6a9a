"""Memory stores: the embedded local store and Tablestore, both implementing the typed port
(:class:`~..memory.store_port.StorePort`, in ``base``), with one stored-row format (``row_format``)."""
