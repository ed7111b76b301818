# CPU image: the project with its pinned torch/torchvision pair; the default command runs the demo.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/edgeticket

COPY pyproject.toml constraints.txt README.md ./
COPY edgeticket ./edgeticket
# The CPU wheels of the pinned pair keep the image small; the pin itself comes from constraints.txt.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt . \
    && edgeticket --version

WORKDIR /work
ENTRYPOINT ["edgeticket"]
CMD ["demo", "--out", "/work/runs/demo"]
