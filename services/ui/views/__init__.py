"""One script per UI page; services/ui/app.py lists them in st.navigation.

Not named pages/: Streamlit would also discover that folder as old-style pages, and a
first visit straight to /compare would then run the page without app.py's navigation.
"""
