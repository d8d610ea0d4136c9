# deskpulse-collector %postun ($1: 0 on erase, 1 on upgrade). RPM has no
# purge: erase keeps /var/lib/deskpulse-collector and the system user.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
