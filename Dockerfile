# The herdctl image, built with no base image and no registry:
#
#   cargo build --release --locked && scripts/image-root.sh && docker build -t herdctl .
#
# scripts/image-root.sh lays out the whole file system (the binary, the libraries it links,
# CA certificates, the herd user) in target/image-root; this copies it in.
FROM scratch
COPY target/image-root/ /
# /var/lib/herd owned by the herd user, so a new volume there is too (COPY gives root what
# it copies, and --chown does not reach the folder copied into, only what goes in it).
COPY --chown=65532:65532 target/image-root/var/lib/ /var/lib/
USER 65532:65532
WORKDIR /var/lib/herd
VOLUME ["/var/lib/herd"]
ENV PATH=/usr/local/bin HERD_CONFIG=/etc/herd/herd.yaml
ENTRYPOINT ["/usr/local/bin/herdctl"]
# The server to run is named by whoever runs the image (compose: `run <Name> --log-stdout`).
CMD ["--help"]
