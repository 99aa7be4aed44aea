"""vppo"""
