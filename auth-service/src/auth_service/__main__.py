from infergate_common.runner import serve

from auth_service.config import get_settings

serve("auth_service.main:create_app", get_settings)
