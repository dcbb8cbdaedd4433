"""One script per UI page; services/ui/app.py lists them in st.navigation."""
