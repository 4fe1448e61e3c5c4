"""Use a trained model: a generation engine shared by the chat CLI, the API server and batch predict."""
