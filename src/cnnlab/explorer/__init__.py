"""``cnnlab serve``: a local explorer for any cnnlab or PyTorch CNN. Draw an input (or pick
a test example) and watch every layer respond; shift it and see equivariance; swap max
pooling for BlurPool; click a feature map for its filter, receptive field, Grad-CAM,
feature visualisation and strongest test inputs; step through a convolution.

:mod:`.session` computes the answers (:class:`Explorer`, plain data), :mod:`.server` is the
HTTP side (the standard library's ``ThreadingHTTPServer``), ``static/`` the one page
(plain JavaScript, SVG and canvas; nothing loaded from elsewhere).
"""

from .server import MAX_BODY, ExplorerServer, make_server, serve
from .session import Explorer, RequestError, decode_maps, encode_maps

__all__ = ["MAX_BODY", "Explorer", "ExplorerServer", "RequestError", "decode_maps",
           "encode_maps", "make_server", "serve"]
