"""The provider configs mem0 validates (``vector_store.config``), one pydantic model per provider.

Why pydantic: mem0's ``VectorStoreConfig`` builds the provider's config class from the dict a user passes,
deep-copies it for the ``<name>_entities`` collection and sets ``collection_name`` on the copy. Keys
left out of the ``tablestore`` config are read from the ``TABLESTORE_*`` variables the server uses.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tablestore_openmemory_mcp.settings import CONNECTION_FIELDS, TablestoreConnection

_ENV = {
    "endpoint": "TABLESTORE_ENDPOINT",
    "instance_name": "TABLESTORE_INSTANCE_NAME",
    "access_key_id": "TABLESTORE_ACCESS_KEY_ID",
    "access_key_secret": "TABLESTORE_ACCESS_KEY_SECRET",
    "sts_token": "TABLESTORE_STS_TOKEN",
    "table_name": "TABLESTORE_TABLE_NAME",
    "vector_dimension": "TABLESTORE_VECTOR_DIMENSION",
}


def _dimension(values: dict[str, Any]) -> dict[str, Any]:
    """mem0's other stores call the dimension ``embedding_model_dims``: accept that name too."""
    dims = values.pop("embedding_model_dims", None)
    if values.get("vector_dimension") is None and dims is not None:
        values["vector_dimension"] = dims
    return values


class TablestoreConfig(BaseModel):
    """``{"provider": "tablestore", "config": {...}}``: a table and its search index on Alibaba Cloud Tablestore."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    instance_name: str
    access_key_id: str
    access_key_secret: str = Field(repr=False)
    sts_token: str | None = Field(None, repr=False)
    table_name: str = "mem0"
    vector_dimension: int = Field(1536, ge=1, le=4096)
    collection_name: str | None = None  # mem0 sets it for the entities collection; defaults to table_name
    index_name: str | None = None
    metric: str = "cosine"
    region: str | None = None
    timeout: float = Field(10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        values = dict(data) if isinstance(data, dict) else data
        if isinstance(values, dict):
            values = _dimension(values)
            for key, variable in _ENV.items():
                if values.get(key) in (None, "") and os.environ.get(variable):
                    values[key] = os.environ[variable]
        return values

    @model_validator(mode="after")
    def _collection(self) -> TablestoreConfig:
        if not self.collection_name:
            self.collection_name = self.table_name
        return self

    def connection(self) -> TablestoreConnection:
        """The connection part of this config, as the server's own stores take it."""
        return TablestoreConnection(**self.model_dump(include=set(CONNECTION_FIELDS)))


class _EmbeddedPath(BaseModel):
    # Declared on a base class on purpose: mem0 fills in "/tmp/<provider>" for a ``path`` it finds in the
    # provider config's own annotations; a missing data directory must be an error instead.
    path: str


class EmbeddedConfig(_EmbeddedPath):
    """``{"provider": "openmemory_embedded", "config": {"path": <data dir>, ...}}``: the server's embedded store."""

    model_config = ConfigDict(extra="forbid")

    vector_dimension: int = Field(ge=1, le=4096)
    collection_name: str = "memories"  # the server's own collection in <path>/memories.sqlite3

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        return _dimension(dict(data)) if isinstance(data, dict) else data


class InstanceConfig(BaseModel):
    """The server's own store (``MEMORY_ENGINE=mem0``): ``token`` names it in this process."""

    model_config = ConfigDict(extra="forbid")

    token: str
    collection_name: str
