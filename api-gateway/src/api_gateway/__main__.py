from infergate_common.runner import serve

from api_gateway.config import get_settings

serve("api_gateway.main:create_app", get_settings)
