# One image for every cortexcast process (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY cortexcast ./cortexcast
COPY stream ./stream
COPY daq ./daq
COPY decoder ./decoder
COPY display ./display
RUN pip install --no-cache-dir .
ENTRYPOINT ["cortexcast"]
