"""The image downloader, engine-free: one bounded HTTP GET (client), where it may connect (netguard), consent
before bytes are kept (consent: robots.txt, X-Robots-Tag), per-host politeness on a shared thread pool
(politeness), the journal that makes a run resumable (journal), and one URL to one ImageRecord (fetcher).
The fetch stage (pipelines/fetch.py) runs them inside Beam."""
