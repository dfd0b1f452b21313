"""Typed access to what the lifespan created, for the route handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from infergate_local_llm.catalog import ModelCatalog
from infergate_local_llm.config import ServerConfig
from infergate_local_llm.worker import GenerationWorker


@dataclass(frozen=True)
class Resources:
    config: ServerConfig
    catalog: ModelCatalog
    worker: GenerationWorker


def get_resources(request: Request) -> Resources:
    resources = request.app.state.resources
    assert isinstance(resources, Resources), "the lifespan has not run"
    return resources


def get_config(request: Request) -> ServerConfig:
    return get_resources(request).config


def get_catalog(request: Request) -> ModelCatalog:
    return get_resources(request).catalog


def get_worker(request: Request) -> GenerationWorker:
    return get_resources(request).worker


ConfigDep = Annotated[ServerConfig, Depends(get_config)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
WorkerDep = Annotated[GenerationWorker, Depends(get_worker)]
