# Asterisk 22 from Debian sid (the only Debian suite that packages it), with the project's
# minimal configuration in place of the package's samples.
FROM debian:sid-slim
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      asterisk asterisk-modules curl \
 && rm -rf /var/lib/apt/lists/* /etc/asterisk/*
COPY asterisk-conf/ /etc/asterisk/
RUN chown -R asterisk:asterisk /etc/asterisk /var/lib/asterisk /var/log/asterisk /var/spool/asterisk \
 && mkdir -p /var/run/asterisk && chown asterisk:asterisk /var/run/asterisk
# Foreground, no console, run as the package's asterisk user.
CMD ["asterisk", "-f", "-n", "-q", "-U", "asterisk", "-G", "asterisk"]
