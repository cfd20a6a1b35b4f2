"""All settings in one place: ``CATALOG_*`` environment variables, overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from catalog.cache.config import CacheConfig


def _comma_list(value: Any) -> Any:
    """``a,b`` (as the environment gives it) -> ``["a", "b"]``; lists pass as they are."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: A list given as ``a,b,c`` in the environment (or as a list in code).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


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
    thrift_max_connections_per_client: int = Field(
        default=64, ge=1,
        description="open Thrift connections per client IP before that client's idle ones are "
                    "reclaimed (over it, new ones are refused only when the server is over half "
                    "full)")
    thrift_min_idle_timeout_s: float = Field(
        default=1.0, gt=0,
        description="idle timeout when the Thrift server is nearly full (it shrinks from "
                    "thrift_idle_timeout_s, used while under half full)")
    thrift_request_timeout_s: float = Field(
        default=10.0, gt=0,
        description="time allowed to receive one Thrift request, plus its size at "
                    "thrift_min_request_bytes_per_s (slow senders are closed)")
    thrift_min_request_bytes_per_s: int = Field(default=64 * 1024, ge=1)
    thrift_worker_idle_s: float = Field(
        default=60.0, gt=0, description="idle Thrift connection threads exit after this long")
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
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the REST API's mutating endpoints (default: generated at "
                    "first start into <data_dir>/api-token, mode 0600)")
    api_read_auth: bool = Field(
        default=False, description="require the token on the REST read endpoints too")
    rest_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1, description="largest REST request body accepted (413 beyond)")
    allowed_roots: CommaList = Field(
        default_factory=list,
        description="local folders a directory attach may read (comma-separated); empty = no "
                    "limit. Namespace paths (strata:///) and storages served by a mount are "
                    "always allowed")
    allowed_metastores: CommaList = Field(
        default_factory=list,
        description="host[:port] patterns (fnmatch, e.g. *.corp:9083) a hive attach may "
                    "connect to (comma-separated); empty = no limit")
    transform_parallelism: int = Field(
        default=2, ge=1, le=64, description="partitions of a transformation job run at once")
    transform_memory_limit_bytes: int = Field(
        default=2 * 1024**3, ge=64 * 1024**2,
        description="memory the running transformations may use in all (split evenly over the "
                    "partitions running at once; DuckDB's memory_limit)")
    transform_gc_grace_s: float = Field(
        default=3600.0, ge=0,
        description="how long a replaced layout's files stay (queries planned before the "
                    "switch may still read them) before they are deleted")
    transform_jobs_kept: int = Field(
        default=1000, ge=1, description="finished transformation jobs kept in the history")
    s3_port: int = Field(
        default=0, ge=0, le=65535,
        description="port of the S3-compatible gateway over the namespace (0: off)")
    s3_access_key: str | None = Field(
        default=None, description="access key id the S3 gateway accepts (AWS Signature V4)")
    s3_secret_key: SecretStr | None = Field(
        default=None, description="secret key of s3_access_key (never logged)")
    s3_region: str = Field(default="us-east-1", description="region the S3 gateway signs for")
    s3_max_object_bytes: int = Field(
        default=5 * 1024**4, ge=1, description="largest object a PutObject or upload may make")
    cache_tiers: CacheConfig | None = Field(
        default=None,
        description="the block store's tiers as JSON, e.g. {\"block_size\": \"64MiB\", \"tiers\": "
                    "[{\"alias\": \"MEM\", \"dirs\": [{\"path\": \"/dev/shm/strata\", "
                    "\"quota\": \"4GiB\"}]}]}; unset: one tier at <data_dir>/cache")
