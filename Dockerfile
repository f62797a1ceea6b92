# Vantage agent image, built FROM scratch: no base image is pulled.
#
# Build it with scripts/docker-image.sh, which compiles a statically linked
# release binary and stages the few files the image needs (CA certificates
# for HTTPS checks and the DNS provider API, /etc/hosts, /tmp) in
# target/docker-rootfs before running `docker build`.
FROM scratch
COPY target/docker-rootfs/ /
USER 65534:65534
EXPOSE 7101
ENTRYPOINT ["/vantage"]
CMD ["run", "--config", "/etc/vantage/vantage.toml"]
