# Test stand-in for Garage's own image (production: dxflrs/garage, pinned in
# compose.yaml), from the garage binary the test suite already installed.
ARG BASE=scratch
FROM ${BASE} AS test
COPY bin/garage /garage
# Root, as in Garage's own image: its secret files are root's, mode 600.
ENTRYPOINT ["/garage"]
CMD ["server"]
