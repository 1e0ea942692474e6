from __future__ import annotations

from datetime import datetime

from pydantic import Field

from consult_api.schemas import Output
from consult_api.slides.models import SlideStatus


class LevelRead(Output):
    width: int
    height: int
    downsample: float
    tile_width: int
    tile_height: int


class AssociatedImageRead(Output):
    name: str
    width: int
    height: int
    phi: bool = Field(description="Shows the slide label (patient data): never exported.")


class SlideRead(Output):
    id: str
    case_id: str
    status: SlideStatus
    filename: str
    vendor: str
    size: int
    blob_sha256: str
    width: int
    height: int
    level_count: int
    levels: list[LevelRead]
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    associated_images: list[AssociatedImageRead]
    created_by: str
    created_at: datetime
    dzi_url: str = Field(description="DeepZoom descriptor; tiles are under <id>_files/.")


class SlidePage(Output):
    items: list[SlideRead]
    total: int
    limit: int
    offset: int
