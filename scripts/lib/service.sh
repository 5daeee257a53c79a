# Sourced by scripts/churn and scripts/soak: the Asterisk they run against, and the service
# (release build) started on its own Stasis application and ports, stopped on exit.
#
# Environment (optional):
#   ASTERISK_ARI_URL     ARI of the Asterisk  (default http://127.0.0.1:$ASTERISK_HTTP_PORT,
#                        18088: the sandbox of scripts/asterisk-sandbox)
#   ASTERISK_ARI_USER / ASTERISK_ARI_PASSWORD   (default mediastream / mediastream)

ari_url=${ASTERISK_ARI_URL:-http://127.0.0.1:${ASTERISK_HTTP_PORT:-18088}}
ari_user=${ASTERISK_ARI_USER:-mediastream}
ari_password=${ASTERISK_ARI_PASSWORD:-mediastream}
service_pid=

# An Asterisk that answers is used as it is, never restarted (it may be shared); when none
# does, the sandbox is started (as root: first time installed, then cached).
ensure_asterisk() {
    if curl -fsS -m 2 -u "$ari_user:$ari_password" "$ari_url/ari/asterisk/info" >/dev/null 2>&1; then
        return 0
    fi
    echo "no Asterisk answers at $ari_url: starting the sandbox" >&2
    scripts/asterisk-sandbox up
}

# The pid of the Asterisk listening on the ARI port, if this machine runs it.
asterisk_pid() {
    local port
    port=$(echo "$ari_url" | sed -E 's|.*:([0-9]+).*|\1|')
    ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2 || true
}

# start_service APP LISTEN RTP_PORTS MAX_STREAMS TOKEN LOG: starts the service in the
# background (service_pid) and waits up to 30 s for /ready.
start_service() {
    env MEDIASTREAM__ARI__URL="$ari_url" \
        MEDIASTREAM__ARI__USERNAME="$ari_user" \
        MEDIASTREAM__ARI__PASSWORD="$ari_password" \
        MEDIASTREAM__ARI__APP="$1" \
        MEDIASTREAM__HTTP__LISTEN="$2" \
        MEDIASTREAM__MEDIA__RTP_PORTS="$3" \
        MEDIASTREAM__MEDIA__AUDIOSOCKET_PORT=0 \
        MEDIASTREAM__LIMITS__MAX_STREAMS="$4" \
        MEDIASTREAM__AUTH__API_KEYS="$5" \
        RUST_LOG=${RUST_LOG:-warn} NO_COLOR=1 \
        "$CARGO_TARGET_DIR/release/ari-mediastream" >"$6" 2>&1 &
    service_pid=$!
    for _ in $(seq 300); do
        curl -sf -o /dev/null "http://$2/ready" && return 0
        kill -0 "$service_pid" 2>/dev/null || { tail -20 "$6" >&2; return 1; }
        sleep 0.1
    done
    echo "the service was not ready within 30 s (log: $6)" >&2
    return 1
}

stop_service() {
    if [ -n "$service_pid" ]; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
        service_pid=
    fi
}
