"""For running the data plane under plain ``mitmdump``::

    mitmdump --mode reverse:http://127.0.0.1:3001@3000 --set connection_strategy=lazy \
        -s dataplane_addon/mitmdump_script.py --set mesh_redis_url=redis://127.0.0.1:6379/0 \
        --set mesh_dataplane_key_file=data/dataplane.key

The data-plane key (or ``MESH_DATAPLANE_KEY``) is required: without it every snapshot is refused,
as none can be authenticated. ``python -m dataplane_addon`` (what ``mesh up`` runs) embeds the
same chain in a leaner master and takes the same options (``--options`` there lists them).
stdio and sse connections need the bridge too (``python -m dataplane_addon.bridge``, address in
``--set mesh_bridge=HOST:PORT``), with the same ``MESH_BRIDGE_TOKEN`` in both environments.
"""

from dataplane_addon.chain import build_chain

addons = [build_chain()]
