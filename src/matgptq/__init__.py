"""matgptq: post-training Matryoshka quantization of large language models.

    import matgptq
    matgptq.quantize_model("path/to/model", "out/", matgptq.QuantConfig(bits=(8, 4, 3)))
    model = matgptq.load("out/", bits=4); model.set_bits(3)
    matgptq.evaluate("out/", bits=(8, 6, 4, 3, 2))
    matgptq.search_bits("out/", target_bits=3.25); model = matgptq.load("out/", profile="3.25")
"""

__version__ = "0.1.0"

_LAZY = {
    "quantize_model": "api", "load": "api", "evaluate": "api", "set_bits": "api",
    "QuantConfig": "quant", "QuantizedWeight": "quant", "search_bits": "search.run",
}


def __getattr__(name):  # imports torch/transformers only when the API is used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'matgptq' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
