# Transfer Learning Lab as a Hugging Face Docker Space (README, "Deploying on Hugging Face
# Spaces"); also runs anywhere Docker does:
#   docker build -t tl-lab . && docker run -p 8501:8501 tl-lab
FROM python:3.11-slim

# Spaces run the container as user ID 1000; its HOME must be writable (pip, torch's cache,
# Streamlit, the lab home). The live lab home stays on the container's local disk; a Storage
# Bucket mounted at /data receives copies of data sets, finished runs and run-store snapshots
# (TL_LAB_PERSIST), and an empty lab home is restored from it at start.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TL_LAB_HOME=/home/user/lab \
    TL_LAB_PERSIST=/data
WORKDIR /home/user/app
RUN python -m venv /home/user/venv

# CPU-only torch and torchvision from PyTorch's CPU wheel index (no CUDA libraries), then the
# pinned app set: 2.14.1+cpu satisfies requirements.txt's torch==2.14.1, so pip keeps it.
COPY --chown=user requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && pip install -r requirements.txt

COPY --chown=user . .
RUN pip install --no-deps . && mkdir -p "$TL_LAB_HOME"

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"]
CMD ["tl-lab", "app", "--server.address", "0.0.0.0", "--server.port", "8501"]
