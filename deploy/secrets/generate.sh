#!/bin/sh
# Creates the secret files deploy/compose.yaml mounts (never commit them; .gitignore keeps them out):
#   redis.acl           Redis users: the service's user with a random password; unauthenticated clients may only PING
#   redis-url           the service's TOKEN_SERVICE_REDIS_URL_FILE: redis://token-service:<password>@redis:6379/0
#   key-encryption-key  TOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE: 32 random bytes, hex (the managed key ring)
#   admin-key           TOKEN_SERVICE_ADMIN_KEY_FILE: the bootstrap admin key
# Usage: sh deploy/secrets/generate.sh [directory]   (default: this script's directory). Existing files are kept:
# a new key-encryption key would make the ring already in Redis unreadable.
set -eu
dir=${1:-$(dirname "$0")}
mkdir -p "$dir"
umask 077
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

if [ ! -e "$dir/redis.acl" ] || [ ! -e "$dir/redis-url" ]; then
    password=$(random_hex 32)
    # ~* &*: every key and channel; no @dangerous command (FLUSHALL, DEBUG, KEYS, CONFIG SET ...) but INFO and
    # CONFIG GET, which the service's start-up durability check reads (docs/operations/redis.md).
    printf 'user default on nopass -@all +ping\nuser token-service on >%s ~* &* +@all -@dangerous +info +config|get\n' \
        "$password" > "$dir/redis.acl"
    printf 'redis://token-service:%s@redis:6379/0\n' "$password" > "$dir/redis-url"
fi
[ -e "$dir/key-encryption-key" ] || random_hex 32 > "$dir/key-encryption-key"
[ -e "$dir/admin-key" ] || random_hex 32 > "$dir/admin-key"

# Compose bind-mounts file secrets with their host permissions, and the containers run as other users
# (redis: uid 999, the service: uid 10001): make them readable there. Keep the directory itself private.
chmod 0644 "$dir/redis.acl" "$dir/redis-url" "$dir/key-encryption-key" "$dir/admin-key"
chmod 0700 "$dir" 2>/dev/null || true
echo "secrets in $dir: redis.acl redis-url key-encryption-key admin-key"
