"""The configuration language: pydantic models (`models`), the resource mini-language
(`resources`), the loader (`loader.load_paths`), JSON Schema (`schema`) and reference docs (`docs`).

Importable without Pulumi: the runtime and the CLI's `validate` depend on it alone.
"""
