"""All settings in one place: ``CATALOG_*`` environment variables, overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service settings. Every field can be set as ``CATALOG_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore")

    data_dir: Path = Field(default=Path("./strata-data"), description="state store and caches")
    host: str = Field(default="127.0.0.1", description="address the servers bind")
    thrift_port: int = Field(default=9083, ge=0, le=65535)
    trino_thrift_port: int = Field(
        default=9084, ge=0, le=65535,
        description="second HMS Thrift listener for Trino (local file: locations served as "
                    "local:///, which Trino's native local file system needs); 0 disables")
    rest_port: int = Field(default=8080, ge=0, le=65535)
    thrift_max_connections: int = Field(default=256, ge=1)
    thrift_idle_timeout_s: float = Field(default=600.0, gt=0)
    thrift_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    sync_interval_s: float = Field(
        default=300.0, ge=0, description="default periodic sync per database; 0 disables"
    )
    udb_timeout_s: float = Field(default=60.0, gt=0, description="timeout of one UDB call")
    udb_retries: int = Field(default=3, ge=0, description="retries of a failed UDB call")
    udb_pool_size: int = Field(default=4, ge=1, description="connections per hive UDB")
    server: str = Field(default="http://127.0.0.1:8080", description="REST URL the CLI talks to")
    encoded_cache_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0, description="memory for pre-encoded Thrift answers"
    )
    partition_index_cache_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0,
        description="memory for the partition-name indexes of tables (per table version)")
    root_ufs: str | None = Field(
        default=None,
        description="under storage of the catalog's own root /catalog (default: the data "
                    "dir's catalog/ folder; an s3:// prefix works, with root_ufs_options)")
    root_ufs_options: dict[str, str] = Field(
        default_factory=dict, description="options of root_ufs, as JSON (s3.endpoint, ...)")
    fs_list_parallelism: int = Field(
        default=16, ge=1, le=256, description="parallel listings when fingerprinting data")
