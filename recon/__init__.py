"""recon"""
