"""The fraud model: one package so training, batch scoring and the API share a single feature and model code path."""

import warnings

# torch_geometric 2.8 applies torch.jit.script to a pooling class when it is imported
# (torch_geometric/nn/pool/select/base.py), and torch (2.15 here) deprecates torch.jit.script with a
# FutureWarning on every such call. The notice is addressed to PyG, not to us (nothing here scripts), and
# it reached every `identigraph train` / `make demo` log. Registered here, before any model module imports
# PyG, without importing torch itself (serving imports identigraph.model.request_path and must stay light);
# narrowed to that one message, raised from torch.jit._script.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                        module=r"torch\.jit\._script")
