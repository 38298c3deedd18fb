defmodule ShopWeb.Router do
  use ShopWeb, :router

  pipeline :browser do
    plug :accepts, ["html"]
    plug :fetch_session
    plug :fetch_live_flash
    plug :put_root_layout, html: {ShopWeb.Layouts, :root}
    plug :protect_from_forgery
    plug :put_secure_browser_headers
  end

  pipeline :api do
    plug :accepts, ["json"]
  end

  scope "/", ShopWeb do
    pipe_through :browser
    get "/", PageController, :home
    live "/cart", CartLive
  end

  scope "/api", ShopWeb do
    pipe_through :api
    get "/products", ProductController, :index
    get "/products/:id", ProductController, :show
    get "/search", ProductController, :search
    post "/orders", OrderController, :create
    post "/login", SessionController, :create
  end
end
