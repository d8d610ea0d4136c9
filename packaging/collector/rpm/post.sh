# deskpulse-collector %post ($1: 1 on install, 2 on upgrade): creates the
# system user and the data dir, then enables and (re)starts the service
# where systemd runs.
USER=deskpulse-collector
DATA_DIR=/var/lib/deskpulse-collector
UNIT=deskpulse-collector.service

if ! getent passwd "$USER" >/dev/null; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/deskpulse-collector.conf
    else
        useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /sbin/nologin --comment "Deskpulse collector" "$USER"
    fi
fi
install -d -m 0750 -o "$USER" -g "$USER" "$DATA_DIR"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    systemctl enable "$UNIT" >/dev/null 2>&1 || :
    systemctl restart "$UNIT" >/dev/null 2>&1 ||
        echo "deskpulse-collector: the service did not start; see \`journalctl -u $UNIT\`" >&2
fi
exit 0
