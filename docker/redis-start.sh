#!/bin/sh
# The compose Redis: an ACL file from the environment (no access without a password), then the
# server with an append-only file (the settlement outbox must survive a restart) and no eviction.
set -eu
acl=/tmp/users.acl
umask 077
cat > "$acl" <<ACL
user default off
user gateway on >${REDIS_GATEWAY_PASSWORD} ~infergate:* ~rate_limit:* ~keyver:* ~keydoubt:* resetchannels -@all +ping +get +set +mget +exists +eval +evalsha +script|load +multi +exec +zadd +zrem +zcard +zrange +zrangebyscore +zremrangebyscore +zpopmin +del +pexpire +time +hset +hget +hdel +hlen
user admin on >${REDIS_ADMIN_PASSWORD} ~* &* +@all
ACL
exec redis-server --aclfile "$acl" --appendonly yes --appendfsync everysec \
    --maxmemory-policy noeviction --dir /data
