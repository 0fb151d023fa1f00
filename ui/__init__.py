"""The dashboard's shared UI helpers (Streamlit code lives here and in pages/, never in tokconv)."""
