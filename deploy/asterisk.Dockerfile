# Asterisk 22 from Debian sid (the only Debian suite that packages it), pinned to the version
# the project is tested with, with the project's minimal configuration in place of the
# package's samples.
FROM debian:sid-slim
ARG ASTERISK_VERSION=1:22.10.1+dfsg+~cs6.17.60671434-1
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "asterisk=${ASTERISK_VERSION}" "asterisk-modules=${ASTERISK_VERSION}" \
 && rm -rf /var/lib/apt/lists/* /etc/asterisk/* \
 && asterisk -V
LABEL org.opencontainers.image.title="Asterisk for ari-mediastream" \
      org.opencontainers.image.version="${ASTERISK_VERSION}"
COPY asterisk-conf/ /etc/asterisk/
RUN chown -R asterisk:asterisk /etc/asterisk /var/lib/asterisk /var/log/asterisk /var/spool/asterisk \
 && mkdir -p /var/run/asterisk && chown asterisk:asterisk /var/run/asterisk
# Healthy once the console answers and the HTTP server (ARI) is up; no curl needed.
HEALTHCHECK --interval=5s --timeout=4s --start-period=20s --retries=6 \
  CMD asterisk -rx "http show status" | grep -q "Server Enabled"
# Foreground, no console, run as the package's asterisk user.
CMD ["asterisk", "-f", "-n", "-q", "-U", "asterisk", "-G", "asterisk"]
