# A first draft (no Docker engine on the build machines to test it): the gateway in one image.
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY control_plane control_plane
COPY dataplane_addon dataplane_addon
COPY shared shared
COPY web web
RUN pip install --no-cache-dir -c requirements.lock .
ENV HOST=0.0.0.0 PORT=3000 MESH_DATA_DIR=/data
VOLUME /data
EXPOSE 3000
CMD ["mesh", "up"]
