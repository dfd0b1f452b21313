from infergate_common.runner import serve

from usage_service.config import get_settings

serve("usage_service.main:create_app", get_settings)
