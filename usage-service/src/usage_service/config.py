"""usage-service settings."""

from __future__ import annotations

from functools import lru_cache

from infergate_common.settings import ServiceSettings
from infergate_common.validation import Plan
from pydantic import PositiveInt

from usage_service.webhook_settings import QuotaWebhookSettings


class Settings(ServiceSettings, QuotaWebhookSettings):
    service_name: str = "usage-service"
    port: int = 4002
    mongo_uri: str = "mongodb://127.0.0.1:27017/infergate-usage?directConnection=true"
    mongo_timeout_ms: int = 2000
    free_monthly_tokens: PositiveInt = 5000
    pro_monthly_tokens: PositiveInt = 50000
    # The least time a reservation is held unsettled before the sweeper releases it (a gateway
    # asks for as long as its chat may take to settle: the longer of the two applies).
    reservation_ttl_seconds: PositiveInt = 600
    reservation_sweep_seconds: float = 30.0

    def monthly_limit(self, plan: Plan) -> int:
        return self.pro_monthly_tokens if plan is Plan.PRO else self.free_monthly_tokens


@lru_cache
def get_settings() -> Settings:
    return Settings()
