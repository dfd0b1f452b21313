from infergate_common.runner import serve

from ai_service.config import get_settings

serve("ai_service.main:create_app", get_settings)
