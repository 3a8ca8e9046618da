"""GGUF files (llama.cpp's format): read one as a hearth model (`load_gguf`) and write one from a
Hugging Face model directory (`convert_to_gguf`, behind ``hearth convert``)."""

from hearth.engine.gguf.reader import GGUFModel, load_gguf

__all__ = ["GGUFModel", "convert_to_gguf", "load_gguf"]


def __getattr__(name: str):
    # the writer pulls in the safetensors loader and tqdm; loading a model does not need them
    if name in ("convert_to_gguf", "OUT_TYPES"):
        from hearth.engine.gguf import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'hearth.engine.gguf' has no attribute {name!r}")
