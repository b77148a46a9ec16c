# The Dockerfile equivalent of python-numpy.def: `rsing build numpy.sif python-numpy.Dockerfile`
# (the build context is this file's directory). RUN runs as "root" in a user namespace.
FROM debian:bookworm-slim
ARG PYPKGS=python3-numpy
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3 ${PYPKGS} \
    && rm -rf /var/lib/apt/lists/*
ENV LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
LABEL org.opencontainers.image.title=python-numpy
ENTRYPOINT ["python3"]
