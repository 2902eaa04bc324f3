"""Real peers for the integration tests: Orthanc, dcmqrscp and Elasticsearch.

Each peer is a plain class that owns one subprocess on free loopback ports, with
``start()`` / ``stop()`` that can be called again and again (same ports, same data),
so a test can take a peer down between two queries and bring it back.
``pacsfed`` runs pacsfed itself as an outsider would: a clean install, ``pacsfed serve`` as a process.
Nothing here imports the application (``federation``, ``connectors``, ``schema``).

``dicomdata`` makes the seeded DICOM instances and holds the catalogue saying
which study lives on which peer.
"""

from .dcmqrscp import DcmqrscpPeer
from .elasticsearch import ElasticsearchNode
from .orthanc import OrthancPeer
from .pacsfed import PacsfedServer
from .ports import free_port
from .process import PeerError

__all__ = ["DcmqrscpPeer", "ElasticsearchNode", "OrthancPeer", "PacsfedServer", "PeerError", "free_port"]
